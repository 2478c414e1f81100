"""Running LIBERO episodes: the runner, simulator workers, the episode scheduler, rollout and
records, episode files, replay, videos and the initial-state split."""
