"""What a user or the operator can do with their work, knowing nothing of HTTP: functions that take an
actor and plain arguments, return data, and raise domain errors (errors.InputError with its code).
The JSON API, the pages and the command line all call these."""
