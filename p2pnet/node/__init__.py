# -*- test-case-name: test.unit.test_node_identity -*-
"""The KVM node: a RustDesk controlled peer that streams a captured screen and turns a
viewer's keyboard and mouse into USB HID reports (docs/kvm-node.md).

- L{p2pnet.node.identity}: id, Ed25519 key, uuid and password hash in the data dir;
- L{p2pnet.node.registration}: the registration loop with the rendezvous server;
- L{p2pnet.node.mediator}: answers PunchHole, FetchLocalAddr and RequestRelay;
- L{p2pnet.node.handshake}, L{p2pnet.node.login}, L{p2pnet.node.session}: the secure
  peer session;
- L{p2pnet.node.service}: L{NodeService}, the C{node} service of the appliance;
- L{p2pnet.node.video}: one encoder feeding every viewer (L{VideoFeed});
- L{p2pnet.node.input}, L{p2pnet.node.hid}: RustDesk key and mouse events to HID reports.
"""
