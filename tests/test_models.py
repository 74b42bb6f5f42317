import pytest
import torch

from ioi.models.load import ModelUnavailableError, gpt2_tokenizer, load_hf, load_model
from ioi.task.data import check_vocabulary, make_dataset, tokenize
from ioi.task.metrics import end_logits


def test_gpt2_tokenizer_offline():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257 and tok.bos_token_id == 50256
    assert tok.encode(" Mary", add_special_tokens=False) == [5335]
    check_vocabulary(tok)


def test_random_gpt2_has_gpt2_small_shape(gpt2_random):
    cfg = gpt2_random.bridge.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_vocab) == (12, 12, 768, 64, 50257)
    assert "random weights" in gpt2_random.source


def test_random_weights_are_seeded():
    a, _, _ = load_hf("random:tiny", seed=1)
    b, _, _ = load_hf("random:tiny", seed=1)
    c, _, _ = load_hf("random:tiny", seed=2)
    wa, wb, wc = (m.transformer.h[0].attn.c_attn.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bridge_matches_hf_logits_up_to_a_constant(tiny_random, gpt2_tok):
    batch = tokenize(make_dataset(5), gpt2_tok)
    with torch.no_grad():
        hf = end_logits(tiny_random.hf_model(batch.tokens).logits, batch)
        br = end_logits(tiny_random.bridge(batch.tokens), batch)
    centre = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731  (compatibility mode centres W_U)
    torch.testing.assert_close(centre(hf), centre(br), atol=1e-4, rtol=1e-4)


def test_local_directory_round_trip(tmp_path, gpt2_tok):
    model, tok, _ = load_hf("random:tiny", seed=3)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert "local directory" in loaded.source and len(loaded.tokenizer) == len(gpt2_tok)


def test_missing_models_say_how_to_get_them(tmp_path):
    with pytest.raises(ModelUnavailableError, match="download it once|local copy"):
        load_hf("gpt2-this-does-not-exist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        load_hf(str(tmp_path / "empty"))


def test_one_thread_restores_the_callers_thread_count_even_on_error():
    from ioi.models.threads import one_thread

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), one_thread():
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
