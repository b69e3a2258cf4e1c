// paraflex/collectives/concepts.hpp - group-free collectives: the Transport concept.
//
// GF-DiT's observation: creating a communicator per group costs 0.1-2.5 s, so elastic parallelism
// cannot afford one per degree change. Instead one transport is set up once for the whole world, and
// a "group" is only an ordered rank list (device_group) passed to each call. Every member of the group
// calls the same collective with the same group, from its own thread or process; rank i of the group
// is group[i].
//
//   all_gather(g, self, send, recv)   recv = concat over ranks of each rank's send (send.size() x g.size())
//   all_to_all(g, self, send, recv)   send is g.size() equal chunks; chunk j goes to rank j; recv holds
//                                     the chunk each rank sent to self, in rank order (Ulysses' swap)
//   send(self, peer, bytes)           point-to-point put; matched by peer's recv(peer, self, bytes)
//   recv(self, peer, bytes)
//   barrier(g, self)
//
// A migration is a set of send/recv pairs between source and destination ranks; a Ulysses step is
// two all_to_alls around attention. Reductions are not part of the concept (DiT sequence
// parallelism does not need them).
//
// Completion: a call returns once the operation is ordered before the rank's later work. On CPU
// threads (shm_transport) that means it has finished; on GPUs (the NCCL transport in
// examples/cuda_nccl) it is queued on the rank's stream, and work queued after it sees the result.
//
//   struct shm { void all_gather(...); void all_to_all(...); void send(...); void recv(...);
//                void barrier(...); };                         // valid: models Transport
//   struct nccl_comm_per_group { void all_reduce(...); };     // invalid: not group-free
#pragma once

#include <concepts>
#include <cstddef>
#include <span>

#include "paraflex/resource/group.hpp"

namespace paraflex {

template <class T>
concept Transport = requires(T& t, const device_group& g, device_id self, device_id peer, std::span<const std::byte> send,
                             std::span<std::byte> recv) {
  t.all_gather(g, self, send, recv);
  t.all_to_all(g, self, send, recv);
  t.send(self, peer, send);
  t.recv(self, peer, recv);
  t.barrier(g, self);
};

}  // namespace paraflex
