"""The gRPC edge: the only package (with server.py) that imports grpc and raven.v1."""
