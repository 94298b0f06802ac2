"""Use cases and the dispatcher: commands have one handler, events many."""
