"""Evolution: how an experiment's circuit changes across its checkpoints (and its lineage's)."""

import streamlit as st

from app_pages._store import by_id, checkpoint_names, lineage_default, result
from app_pages._ui import (
    choice,
    empty_state,
    pick_experiment,
    result_or_offer,
    set_url,
    show_chart,
    show_user_errors,
    url_value,
)
from ioi.present import evolution_charts as ec
from ioi.runs.compare import lineage_reversal

st.title("Evolution")
st.write(
    "Each checkpoint of a run — and with *lineage*, of the toxic run and its reversal — profiled on the "
    "same prompts: its edge circuit (the fewest top edges reaching 80% faithfulness, by exact edge "
    "patching), its overlap with the first checkpoint's, the heads' role scores, and matrices of every "
    "circuit evaluated on every model (transfer) and of cross-model patching (CMAP). Intervals are 95% "
    "paired bootstraps over prompts."
)
SCOPES = {"compare": "this run's checkpoints", "compare-family": "with its lineage (toxic → reversal)"}
ROLES = {
    "dla": "direct logit attribution",
    "name_mover": "direct path to the logits (name-mover score)",
    "s_inhibition": "edges into the name movers' queries (S-inhibition score)",
    "copy_score": "OV copy score",
}


def body() -> None:
    cols = st.columns([3, 2])
    scope = choice(
        "Checkpoints",
        list(SCOPES),
        "evo_scope",
        param="scope",
        where=cols[1],
        radio=True,
        format_func=SCOPES.get,
    )
    before = by_id(url_value("exp"))
    exp = pick_experiment(
        "Experiment", "evo_exp", analysis=scope, default=lineage_default(scope), where=cols[0]
    )
    if exp is not None and before is not None and not before.epochs_with(scope):  # the run asked for
        clean = scope == "compare-family" and before.scenario == "clean"
        why = "has no lineage (a toxic run and its reversal have one)" if clean else "has no such comparison"
        st.info(f"{before.label} {why}: showing {exp.label}.", icon="ℹ️")
    if exp is None:
        empty_state("comparisons", "Run `python -m ioi compare --experiment ID` on a cached experiment.")
        return
    found = result_or_offer(exp, exp.epochs_with(scope)[-1], scope)
    if found is None:
        return
    s = found.summary
    names = checkpoint_names(s)
    t = ec.relabel_checkpoints(found.tables, names)
    stored = list(s["checkpoints"])  # the URL keeps stored labels; charts and tables show names
    order = [names.get(c, c) for c in stored]
    c = st.columns([1, 3, 1])  # the reference is a checkpoint's long name: st.metric cuts what overflows
    c[0].metric("checkpoints", len(order))
    c[1].metric("reference", names.get(s["reference"], s["reference"]))
    c[2].metric("bootstrap resamples", s["resamples"])
    show_chart(
        ec.overlap_tracks(t["overlap"], order, title="Edge circuit against the first checkpoint"),
        t["overlap"],
        "Jaccard indices of each checkpoint's edge circuit (and of the heads its edges "
        "touch) with the first checkpoint's; its faithfulness; its bootstrap self-Jaccard (Méloux et al. "
        "2025 call ≥ 0.8 stable: dashed line; bars from the 5th percentile to the mean). At the first "
        "checkpoint both Jaccard indices are 1 by definition (the lines start together)."
        + ec.wrong_way_note(t["overlap"]),
        "evo-overlap",
    )

    st.subheader("One checkpoint")
    start = url_value("checkpoint") if url_value("checkpoint") in stored else stored[-1]
    picked = st.select_slider(
        "Checkpoint", stored, value=start, key=f"evo_at-{exp.id}", format_func=names.get
    )
    set_url(checkpoint=picked)
    at = names.get(picked, picked)
    role = choice(
        "Role score",
        list(ROLES),
        "evo_role",
        param="role",
        radio=True,
        horizontal=True,
        format_func=ROLES.get,
    )
    frame, _ = ec.roles_at(t["roles"], at, role)
    show_chart(
        ec.role_heatmap(t["roles"], at, role),
        frame,
        "One colour scale for every checkpoint of this comparison, so the slider never rescales.",
        f"evo-heat-{role}",
    )
    row = t["changes"][t["changes"]["checkpoint"] == at].iloc[0]
    st.write(
        f"Against the previous checkpoint — heads entering: {row['heads_entering'] or 'none'}; "
        f"leaving: {row['heads_leaving'] or 'none'}; edges entering: {row['edges_entering'] or 'none'}; "
        f"leaving: {row['edges_leaving'] or 'none'}."
    )

    st.subheader("Role scores over the checkpoints")
    heads = st.multiselect(
        "Heads",
        sorted({f"{r.layer}.{r.head}" for r in t["roles"].itertuples()}),
        default=list(s.get("cmap_heads", []))[:6],
        key="evo_heads",
    )
    if heads:
        track_role = role if role != "copy_score" else "dla"
        show_chart(
            ec.role_tracks(t["roles"], order, heads, track_role),
            t["roles"],
            "Red ring: the score's interval has the opposite sign of the first checkpoint's (a sign flip); "
            "black dot: it changed from the previous checkpoint (paired interval excludes 0, ≥ 5% of F(M)).",
            "evo-roles",
        )

    st.subheader("Across checkpoint pairs")
    c = st.columns(2)
    with c[0]:
        show_chart(
            ec.matrix_heatmap(
                t["transfer"],
                "circuit_of",
                "model",
                order,
                domain=(0.0, 1.0),
                title="Transfer faithfulness",
                value_title="faithfulness",
            ),
            t["transfer"],
            "Row i, column j: the edge circuit of checkpoint i evaluated on the model of "
            "checkpoint j; the diagonal is each circuit's own faithfulness. Grey cells marked "
            "F(M) ≈ 0: model j does not do the task (|F_j(M)| < 0.5 logits, or its interval contains 0), "
            "so the ratio is not defined; their tooltip gives F_j(circuit i) in logits."
            + ec.wrong_way_note(t["overlap"]),
            "evo-transfer",
        )
    with c[1]:
        show_chart(
            ec.matrix_heatmap(
                t["cmap"], "source", "receiver", order, title="CMAP", value_title="change in F (logits)"
            ),
            t["cmap"],
            f"Row i, column j: model j run with the heads {' '.join(s.get('cmap_heads', []))} "
            "taking their END outputs from model i.",
            "evo-cmap",
        )
    recovery_section(s)
    set_url(scope=scope)


def recovery_section(s: dict) -> None:
    """The recovery curve of the lineage's reversal, when its dynamics are cached."""
    rev = lineage_reversal(s) if "experiments" in s else None
    exp = by_id(rev[0]) if rev else None
    found = result(exp, rev[1], "recovery") if exp is not None else None
    if found is None:
        return
    r = found.summary
    st.subheader("Recovery dynamics")
    revive = r["steps_to_revive"]
    f0, base = r["pretrained_logit_diff"], r["baseline_jaccard"]
    st.write(
        f"Steps to revive: **{revive if revive is not None else 'not within the run'}** (F back inside the "
        f"pretrained interval [{f0['lo']:.2f}, {f0['hi']:.2f}] and the top-{r['n_edges']} edges' "
        "Jaccard with "
        f"the pretrained circuit ≥ {r['jaccard_floor']:.2f}). Random edge sets of the same size and layers: "
        f"Jaccard {base['value']:.2f} [{base['lo']:.2f}, {base['hi']:.2f}]. Reviving asks for the "
        "pretrained state itself; the Findings page's edge-level verdict asks less — whether the reversal's "
        "edge circuit is closer to the pretrained one than the toxic run's — so a reversal can move back "
        "there without reviving here."
    )
    show_chart(
        ec.recovery_curve(
            found.tables["points"],
            pretrained=(f0["lo"], f0["hi"]),
            floor=r["jaccard_floor"],
            baseline=(base["lo"], base["hi"]),
            revive=revive,
            title=f"Logit difference, every {r['every']} steps (shaded: the pretrained interval)",
        ),
        found.tables["points"],
        "Orange: the toxic run, from the pretrained model; green: the reversal, from the toxic model, its "
        "steps continuing where the toxic run ended (both re-trained deterministically, measured every few "
        "steps). Top: logit difference, with the pretrained "
        "model's interval shaded. Bottom: overlap of the top edges with the pretrained edge circuit; the "
        "dashed line is the floor reviving needs, the grey band random edge sets of the same size.",
        "evo-recovery",
    )


show_user_errors(body)
