# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""TURN channel data in the kernel (docs/fastpath.md): a BPF program on the tcx ingress
hook of every interface forwards ChannelData to peers and peers' datagrams to clients
for the channels the TURN service writes into its maps; everything else goes on to the
Python path unchanged.

The entries' bytes (L{p2pnet.codecs.fastpath_maps}) and rtnetlink's route messages
(L{p2pnet.codecs.rtnetlink}) are codecs; here L{routes} asks the kernel one route,
L{libbpf} wraps the few libbpf calls, and L{kernel} loads and attaches the program. The TURN service's L{p2pnet.services.turn_fastpath} decides what
the maps hold.
"""
