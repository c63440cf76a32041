# A RustDesk server only: rendezvous (hbbs, 21115-21116, WS 21118) and relay (hbbr, 21117,
# WS 21119), state in ./p2pnet-data: twistd -ny tac/rustdesk.tac (see docs/rustdesk.md)
from twisted.application.service import Application

from p2pnet import buildService
from p2pnet.config import loadConfig

application = Application("p2pnet-rustdesk")
buildService(loadConfig({"services": "rendezvous,relay"})).setServiceParent(application)
