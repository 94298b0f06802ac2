"""The gRPC edge: servicers, proto conversion, status mapping and interceptors.

This is the only package that imports generated ``cortex.*`` stubs.
"""
