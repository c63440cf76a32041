# Everything p2pnet runs, on its embedded defaults: twistd -ny tac/p2pnet.tac
# Settings come from p2pnet.toml beside the working directory when it exists.
import os

from twisted.application.service import Application

from p2pnet import buildService
from p2pnet.config import loadConfig

configFile = "p2pnet.toml" if os.path.exists("p2pnet.toml") else None
application = Application("p2pnet")
buildService(loadConfig(configFile=configFile)).setServiceParent(application)
