"""Optimizers: Muon for hidden matrices, AdamW for everything else, and their schedules."""
