"""devdb's front ends: the terminal CLI and the Slack app, over one command grammar."""
