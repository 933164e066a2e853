"""Schedule rules (one per file, dlight-style classes), the dispatcher that picks them, and the CPU build drivers."""
