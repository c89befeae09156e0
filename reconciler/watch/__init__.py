"""`reconciler watch`: the policy directory watched (debounced re-plans, last good policy set kept), the
backup clock (sleep until the next due time, then the same executor and locks as `apply`), signals,
structured logs and sd_notify. Pure parts (debounce, wake times) are separate from the loop's I/O."""
