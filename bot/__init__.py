"""devdb's front ends: the terminal CLI (and, later, the Slack app) over one command grammar."""
