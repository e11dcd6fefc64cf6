//! Route matching: picks the rule for a request and its weighted backend.
