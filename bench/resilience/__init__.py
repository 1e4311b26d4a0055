"""The soak: resuming clients for minutes through churn, crashes, an instance kill and a Redis restart; what
was lost, crossed between workspaces, left behind in Redis, and how memory grew."""
