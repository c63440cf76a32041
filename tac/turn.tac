# A STUN and TURN server (coturn's role): twistd -ny tac/turn.tac
# Settings (realm, users, auth-secret, relay-ports...) come from p2pnet.toml in the working
# directory when it exists; without users a TURN user is generated into the data directory.
import os

from twisted.application.service import Application

from p2pnet import buildService
from p2pnet.config import loadConfig

configFile = "p2pnet.toml" if os.path.exists("p2pnet.toml") else None
application = Application("p2pnet-turn")
buildService(loadConfig({"services": "stun,turn"}, configFile=configFile)).setServiceParent(
    application)
