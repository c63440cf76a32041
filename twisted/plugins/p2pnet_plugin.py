from twisted.application.service import ServiceMaker

p2pnet = ServiceMaker(
    "p2pnet", "p2pnet.tap", "STUN/TURN, RustDesk rendezvous/relay and control gateway", "p2pnet"
)
