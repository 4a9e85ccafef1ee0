"""What a run says at its end about how it went, where it exited 0: nodes that diverged
or failed, models that mostly came too late or never left an emulated uplink."""

from __future__ import annotations

from .labels import first_few

__all__ = ["end_warnings"]


def end_warnings(summary: dict) -> list:
    """What says at the end that nodes diverged or failed (half of 1,024 ended with a
    clean last line), or that most of a run's messages came too late or never left an
    emulated uplink (the nodes then learned alone): each run exited 0."""
    misses, sent = summary.get("misses_total") or 0, summary.get("messages_sent_total") or 0
    lost = summary.get("emulated_lost_total") or 0
    why = (f"an emulated --link that lost {lost} messages, or one too slow for "
           "--round-timeout?" if lost else "a --link too slow for --round-timeout?")
    out = []
    diverged = summary.get("diverged_nodes") or []
    failed = [k for k in (summary.get("failed_nodes") or {})
              if k != "coordinator" and k not in diverged]
    noun = "nodes" if summary.get("mode") == "gossip" else "workers"
    if diverged:  # the others finished: exit 0, and the accuracy is theirs
        out.append(f"warning: {len(diverged)} of {summary.get('nodes')} {noun} diverged "
                   f"({first_few(diverged)}: their models went non-finite in local "
                   "training; a lower --lr?) and stopped; the accuracy is the others'")
    if failed:
        out.append(f"warning: {len(failed)} of {summary.get('nodes')} {noun} failed "
                   f"({first_few(failed)}; "
                   "failed_nodes in summary.json says why); the accuracy is the others'")
    if summary.get("mode") == "gossip":
        out += _ended_early(summary)
        bad = (summary.get("dropped") or {}).get("undecodable", 0)  # non-finite, corrupt
        if misses and 2 * bad >= misses:  # (a node whose own model diverged stops instead)
            why = ("most were dropped as undecodable: models non-finite or corrupt as they "
                   "were sent (a Byzantine neighbour?)")
        if misses and 2 * misses >= sent:  # mostly alone
            out.append(f"warning: {misses} neighbours' models missed their round (as many "
                       f"as half the messages sent): {why}")
        unsent = (summary.get("dropped") or {}).get("link_unsent", 0)
        models = summary.get("model_messages_total", sent)  # leaves and pulls left too
        if unsent and unsent >= models:  # mostly alone too
            out.append(f"warning: {unsent} models never left their node's emulated uplink "
                       f"(link_unsent), {models} did: a --link too slow for the nodes' pace?")
        return out
    asked, ok = summary.get("participants_total") or 0, summary.get("replies_ok_total") or 0
    if asked and 2 * (asked - ok) >= asked:  # the global model learned from few replies
        out.append(f"warning: {asked - ok} of the {asked} replies the coordinator asked for "
                   f"did not come within their round: {why}")
    return out


def _ended_early(summary: dict) -> list:
    """Gossip nodes that ended before the last round without a stop: offline when all
    their neighbours had finished (an asynchronous run outpaces a churn period), which
    the progress bar showed only as "(5 of 6 nodes)" while their accuracy, of a few
    rounds' model, counted in the mean or (none recorded) silently did not."""
    early = summary.get("ended_early") or {}
    if not early or summary.get("target_reached_at_round") is not None \
            or summary.get("stop_requested_at_round") is not None:
        return []
    rounds = summary.get("rounds")
    at = ", ".join(f"{k} at round {r}" for k, r in list(early.items())[:8])
    more = f", ... ({len(early)} in all)" if len(early) > 8 else ""
    return [f"warning: {len(early)} of {summary.get('nodes')} nodes ended before round "
            f"{rounds} ({at}{more}): offline (or restarted) when all their neighbours had "
            "finished; their accuracy, where they recorded one, is that of their last round "
            "(ended_early in summary.json)"]
