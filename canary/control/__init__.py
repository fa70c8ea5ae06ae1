"""Operator actions on a running release: pause, resume, promote, promote --full, abort, retry.

Whoever asks (`canary pause|resume|promote|retry`, the Slack thread's buttons) is judged
first, with the approvers' rules of gates (canary.approvals.policy); then the request
claims the release's open decision slot (a flow run input the API server keeps once per
key, so of two operators acting at once only the first decides); the running release
alone carries it out and tells everyone how (its events).

    state.py      the control record a run publishes, and the claims of its decision slots
    requests.py   from outside the run: judge a request, claim its slot (CLI, listener)
    watch.py      in the run: the thread that sees claims; the release's control
    holding.py    in the run: what a hold does with them (pause, resume, promote)
    commands.py   `canary pause | resume | promote`
    retry.py      `canary retry`: a rolled-back release again, as a new run
"""
