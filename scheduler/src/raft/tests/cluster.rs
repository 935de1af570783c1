//! Real Raft replicas over real gRPC sockets on loopback.
