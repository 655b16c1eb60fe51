//! Two sessions wired back to back on a virtual clock.
