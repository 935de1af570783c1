//! Tests of the Raft layer against real disks and real sockets.

mod cluster;
mod storage;
