"""gRPC servicers: they translate messages to engine calls and back, nothing more."""
