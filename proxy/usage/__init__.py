"""Usage: the tokens upstreams report, what they cost, and the budgets that cap them."""
