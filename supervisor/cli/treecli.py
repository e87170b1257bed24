"""``deskctl tree ID``: walk a playbook 03 recovery tree at the terminal.

The daemon walks (``tree`` request): probes answer what the supervisor knows, with their
evidence. Interactively (stdin a TTY, or ``--interactive``) each question the probes
cannot answer is asked, y/n, and the walk is asked for again with the answers so far, so
a probe's answer always wins and live state is read fresh at every step. At the leaf:
its kind, the playbook's words, the runbook procedure and its steps, and an offer to execute
the leaf's action:

- ``kill-switch``: the ``kill`` request, its reason naming the tree and the path;
- ``throttle``: the ``throttle`` request at the leaf's multiplier (a P1
  ``operator-throttle`` incident: the desk goes THROTTLED, resolved like any incident);
- ``resume`` (post-incident): the ``resume`` request;
- ``rollback`` / ``investigate``: nothing to execute; the runbook steps are the action.

Non-interactively (a pipe, ``--answer``, ``--json``) the walk is printed once and a
pending question exits 1; ``--execute`` executes the leaf's action, never by default.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, TextIO

EXECUTABLE = ("kill-switch", "throttle", "resume")
EXIT_PENDING = 1  # the walk needs an answer, or the operator stopped it (EOF)


class Client(Protocol):
    def request(self, cmd: str, **args: Any) -> Any: ...


def _yes_no(text: str) -> bool | None:
    return {"y": True, "yes": True, "n": False, "no": False}.get(text.strip().lower())


def _step_lines(step: dict[str, Any]) -> list[str]:
    return [f"{step['question']}  {step['text']}",
            f"    {'yes' if step['answer'] else 'no'} ({step['source']}): {step['evidence']}"]


def _leaf_lines(leaf: dict[str, Any], book: dict[str, Any] | None) -> list[str]:
    out = [f"=> [{leaf['kind'].upper()}] {leaf['text']}"]
    if leaf.get("multiplier") is not None:
        out.append(f"   size multiplier {leaf['multiplier']:g}")
    if book is not None:
        out.append(f"   runbook {book['id']}: {book['title']}")
        out += [f"     {n:02d} {step}" for n, step in enumerate(book["steps"], 1)]
        out.append(f"     verify: {book['verify']}")
    return out


def path_text(w: dict[str, Any]) -> str:
    """``Q1=no (probe), Q2=yes (operator)``: the path in one line, for a kill's reason."""
    return ", ".join(f"{s['question']}={'yes' if s['answer'] else 'no'} ({s['source']})"
                     for s in w["path"])


def execute(client: Client, w: dict[str, Any], answers: dict[str, bool]) -> tuple[str, Any]:
    """Execute the leaf's action; (what was done, the daemon's result).

    Raises:
        ValueError: the leaf has no action to execute (rollback, investigate).
        ControlError: the daemon refused it.
    """
    leaf = w["leaf"]
    reason = f"recovery tree {w['tree']}: {path_text(w)} -> {leaf['kind']}: {leaf['text']}"
    match leaf["kind"]:
        case "kill-switch":
            r = client.request("kill", reason=reason[:4096])
            what = ("kill-switch was already latched; cancel-all re-issued"
                    if r.get("already_latched") else "kill-switch pulled")
            return (f"{what}: mode {r['mode']}, incident {r['incident_id']}", r)
        case "throttle":
            r = client.request("throttle", multiplier=leaf["multiplier"], reason=reason[:4096])
            return (f"throttled: incident {r['incident_id']} at {r['incident_multiplier']:g} "
                    f"size; mode {r['mode']} size {r['size_multiplier']:g}", r)
        case "resume":
            r = client.request("resume", verified_nonprod=answers.get("Q1"))
            return (f"resumed: mode {r['mode']} at size {r['size_multiplier']:.2f} for one "
                    "session", r)
    raise ValueError(f"a {leaf['kind']} leaf has nothing to execute: follow the runbook "
                     "steps")


def _offer(leaf: dict[str, Any]) -> str:
    match leaf["kind"]:
        case "kill-switch":
            return "pull the kill-switch now?"
        case "throttle":
            return f"throttle the desk to {leaf['multiplier']:g} size now?"
        case _:
            return "resume now (recovery size for one session)?"


def _runbook(client: Client, leaf: dict[str, Any] | None) -> dict[str, Any] | None:
    if leaf and leaf.get("runbook"):
        book: dict[str, Any] = client.request("runbook", id=leaf["runbook"])
        return book
    return None


def walk_once(client: Client, tree_id: str, answers: dict[str, bool], *, as_json: bool,
              do_execute: bool, out: TextIO, err: TextIO) -> int:
    """The non-interactive walk: printed once; pending exits 1; ``do_execute`` executes."""

    w = client.request("tree", id=tree_id, answers=answers)
    leaf = w.get("leaf")
    if as_json:
        print(json.dumps(w, indent=2, sort_keys=True), file=out)
    else:
        print(format_walk(w, _runbook(client, leaf)), file=out)
    pending = w.get("pending")
    if pending:
        q = pending["question"]
        print(f"deskctl: tree {tree_id} needs an answer to {q}: re-run with "
              f"--answer {q}=yes or --answer {q}=no", file=err)
        return EXIT_PENDING
    if do_execute:
        done, result = execute(client, w, answers)
        print(json.dumps(result, indent=2, sort_keys=True) if as_json else done, file=out)
    return 0


def _ask(prompt: str, inp: TextIO, out: TextIO) -> bool | None:
    """Ask until y or n; None on end of input."""
    while True:
        out.write(prompt)
        out.flush()
        line = inp.readline()
        if not line:
            out.write("\n")
            return None
        answer = _yes_no(line)
        if answer is not None:
            return answer
        print(f"    please answer y or n (got {line.strip()!r})", file=out)


def walk_interactive(client: Client, tree_id: str, answers: dict[str, bool], *,
                     inp: TextIO, out: TextIO, err: TextIO) -> int:
    """Walk ``tree_id`` asking the operator what the probes cannot answer; at the leaf,
    offer its action. End of input aborts: exit 1, nothing executed."""
    answers = dict(answers)
    shown: list[dict[str, Any]] = []
    header = False
    while True:
        w = client.request("tree", id=tree_id, answers=answers)
        if not header:
            print(f"tree {w['tree']}: {w['title']}", file=out)
            header = True
        if w["path"][:len(shown)] != shown:
            print("(live state changed since the last answer: the walk again from the top)",
                  file=out)
            shown = []
        for step in w["path"][len(shown):]:
            print("\n".join(_step_lines(step)), file=out)
        shown = list(w["path"])
        pending = w.get("pending")
        if pending is None:
            break
        print(f"{pending['question']}  {pending['text']}", file=out)
        if pending.get("evidence"):
            print(f"    probe saw: {pending['evidence']}", file=out)
        answer = _ask("    your answer [y/n]: ", inp, out)
        if answer is None:
            print(f"deskctl: tree {tree_id}: aborted at {pending['question']} (end of input); "
                  "nothing executed", file=err)
            return EXIT_PENDING
        answers[pending["question"]] = answer
    leaf = w["leaf"]
    print("\n".join(_leaf_lines(leaf, _runbook(client, leaf))), file=out)
    if leaf["kind"] not in EXECUTABLE:
        print(f"nothing to execute for a {leaf['kind']} leaf: follow the steps above",
              file=out)
        return 0
    go = _ask(f"{_offer(leaf)} [y/n]: ", inp, out)
    if go is None:
        print(f"deskctl: tree {tree_id}: aborted at the {leaf['kind']} leaf (end of input); "
              "nothing executed", file=err)
        return EXIT_PENDING
    if not go:
        print("not executed", file=out)
        return 0
    done, _ = execute(client, w, answers)
    print(done, file=out)
    return 0


def format_walk(w: dict[str, Any], runbook: dict[str, Any] | None = None) -> str:
    """A recovery-tree walk: each question with who answered it and on what evidence, then
    the leaf's action and the runbook it names (or the question still to answer)."""
    out = [f"tree {w['tree']}: {w['title']}"]
    for step in w["path"]:
        out.append(f"{step['question']}  {step['text']}")
        out.append(f"    {'yes' if step['answer'] else 'no'} ({step['source']}): "
                   f"{step['evidence']}")
    pending, leaf = w.get("pending"), w.get("leaf")
    if pending:
        out.append(f"{pending['question']}  {pending['text']}")
        out.append("    needs an answer" + (f" (probe saw: {pending['evidence']})"
                                            if pending.get("evidence") else ""))
    elif leaf:
        out.append(f"=> [{leaf['kind'].upper()}] {leaf['text']}")
        if runbook is not None:
            out.append(f"   runbook {runbook['id']}: {runbook['title']}")
            out += [f"     {n:02d} {step}" for n, step in enumerate(runbook["steps"], 1)]
            out.append(f"     verify: {runbook['verify']}")
    return "\n".join(out)
