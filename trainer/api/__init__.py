"""The gRPC servicers: proto in, a manager call, proto out."""
