"""Work orders, dispatch and (later) fault clusters."""
