"""`cliptune tune`: a budgeted recipe search with Optuna on the validation split.

One concept per module: `budget` (the time budget and its deadline), `space` (what is searched), `settings`
(tune.json: everything a resume needs), `study` (the SQLite study, resume, stale trials), `pruning` and
`budget_callback` (trainer callbacks that stop a trial), `objective` (one trial = one training run), `leaderboard`
and `plot` (the outputs), `final` (the winner on the test split, once) and `search` (the loop tying them together).
"""
