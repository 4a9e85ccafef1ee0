"""What a run says at its end about how it went, where it exited 0: nodes that failed,
models that mostly came too late or never left an emulated uplink, a diverged run."""

from __future__ import annotations

from .labels import first_few

__all__ = ["end_warnings"]


def end_warnings(summary: dict) -> list:
    """What says at the end that nodes failed (half of 1,024 ended with a clean last
    line), or that most of a run's messages came too late or never left an emulated
    uplink (the nodes then learned alone): each run exited 0."""
    misses, sent = summary.get("misses_total") or 0, summary.get("messages_sent_total") or 0
    lost = summary.get("emulated_lost_total") or 0
    why = (f"an emulated --link that lost {lost} messages, or one too slow for "
           "--round-timeout?" if lost else "a --link too slow for --round-timeout?")
    out = []
    failed = [k for k in (summary.get("failed_nodes") or {}) if k != "coordinator"]
    if failed:  # the run finished with the others: exit 0, and the accuracy is theirs
        noun = "nodes" if summary.get("mode") == "gossip" else "workers"
        out.append(f"warning: {len(failed)} of {summary.get('nodes')} {noun} failed "
                   f"({first_few(failed)}; "
                   "failed_nodes in summary.json says why); the accuracy is the others'")
    if summary.get("mode") == "gossip":
        bad = (summary.get("dropped") or {}).get("undecodable", 0)  # non-finite: diverged
        if misses and 2 * bad >= misses:
            why = ("most were dropped as undecodable: models gone non-finite (diverged: a "
                   "lower --lr?)")
        if misses and 2 * misses >= sent:  # mostly alone
            out.append(f"warning: {misses} neighbours' models missed their round (as many "
                       f"as half the messages sent): {why}")
        unsent = (summary.get("dropped") or {}).get("link_unsent", 0)
        if unsent and unsent >= sent:  # mostly alone too
            out.append(f"warning: {unsent} models never left their node's emulated uplink "
                       f"(link_unsent), {sent} did: a --link too slow for the nodes' pace?")
        return out
    asked, ok = summary.get("participants_total") or 0, summary.get("replies_ok_total") or 0
    if asked and 2 * (asked - ok) >= asked:  # the global model learned from few replies
        out.append(f"warning: {asked - ok} of the {asked} replies the coordinator asked for "
                   f"did not come within their round: {why}")
    return out
