# A STUN server only (RFC 8489/5389/3489, RFC 5780 with a second address): twistd -ny tac/stun.tac
from twisted.application.service import Application

from p2pnet import buildService
from p2pnet.config import loadConfig

application = Application("p2pnet-stun")
buildService(loadConfig({"services": "stun"})).setServiceParent(application)
