# A KVM node (the device side of KVM-over-IP): twistd -ny tac/kvm-node.tac
# Settings (node-server, node-key, node-video, node-keyboard, node-mouse, node-gateway...)
# come from p2pnet.toml in the working directory when it exists; see docs/kvm-node.md.
import os

from twisted.application.service import Application

from p2pnet import buildService
from p2pnet.config import loadConfig

configFile = "p2pnet.toml" if os.path.exists("p2pnet.toml") else None
application = Application("p2pnet-kvm-node")
buildService(loadConfig({"services": "node"}, configFile=configFile)).setServiceParent(
    application)
