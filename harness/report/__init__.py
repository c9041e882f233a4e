"""Reports from an existing run store, never re-running a method.

- `spec`, `table`, `render`: paper-vs-ours tables from `reports/*.yaml` (Markdown, LaTeX, CSV, HTML);
  `python -m harness.report <spec> --store <out_dir>`.
- `collect`: the store (records, cached scores and set-level values, all shards) read back into score rows
  by the score stage's own rules (`harness.results`).
- `leaderboard`: the run's `scores.csv`, `leaderboard.csv`/`.md` and `leaderboard_ci.csv`.
- `plots`, `gallery`, `run_page`: the per-run HTML page (leaderboard, ablation plots, time-versus-quality
  scatter, gallery) written by the report stage.
- `results`: the run's `results.json` (cells with provenance, schema `results.schema.json`), written by the
  report stage; `merge` and `site`: many runs' results as one static leaderboard site; `validate`: checks a
  submission folder. `python -m harness.report results|leaderboard|validate`.
"""
