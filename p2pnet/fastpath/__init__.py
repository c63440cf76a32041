# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""TURN channel data in the kernel (docs/fastpath.md): a BPF program on the tcx ingress
hook of every interface forwards ChannelData to peers and peers' datagrams to clients
for the channels the TURN service writes into its maps; everything else goes on to the
Python path unchanged.

Layers: L{maps} (the entries as bytes) and L{routes} (where the kernel sends an address)
are sans-IO or one syscall; L{libbpf} wraps the few libbpf calls; L{kernel} loads and
attaches the program. The TURN service's L{p2pnet.services.turn_fastpath} decides what
the maps hold.
"""
