"""Users, API keys, quotas and sign-in limits: who is asking and what they may do."""
