"""Use cases: auth -> validation -> limits -> credits -> routing -> provider -> accounting.

No transport code here: the gRPC edge (`raven_service.api`) calls these with domain types.
"""
