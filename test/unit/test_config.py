"""Tests for L{p2pnet.config}: flags, TOML, environment, validation."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from p2pnet.config import Config, fileSettings, loadConfig, parseHostPort, settings
from p2pnet.errors import ConfigError


class LoadTests(SynchronousTestCase):
    """Where values come from and which one wins."""

    def writeToml(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self) -> None:
        """With nothing given, the embedded defaults."""
        config = loadConfig({}, environ={})
        self.assertEqual(config, Config())
        self.assertEqual((config.stun_port, config.tls_port, config.alt_port), (3478, 5349, 3479))
        self.assertEqual(config.data_dir, "./p2pnet-data")

    def test_flags(self) -> None:
        """Flags are parsed into typed values; repeatable ones become tuples."""
        config = loadConfig({"stun-port": "0", "listen": ["127.0.0.1", "[::1]"],
                             "user": ["a:b:c"], "secure-stun": True,
                             "alternate-server": ["[2001:db8::1]:3478"]}, environ={})
        self.assertEqual(config.stun_port, 0)
        self.assertEqual(config.listen, ("127.0.0.1", "::1"))
        self.assertEqual(config.user, (("a", "b:c"),))
        self.assertTrue(config.secure_stun)
        self.assertEqual(config.alternate_server, (("2001:db8::1", 3478),))

    def test_tomlAndFlagsWin(self) -> None:
        """The file sets keys; a flag overrides the file."""
        path = self.writeToml('stun-port = 4000\ntls-port = 4001\nlisten = ["127.0.0.1"]\n'
                              'secure-stun = true\nrealm = "example.org"\n')
        config = loadConfig({"stun-port": "5000"}, path, environ={})
        self.assertEqual((config.stun_port, config.tls_port), (5000, 4001))
        self.assertEqual(config.listen, ("127.0.0.1",))
        self.assertTrue(config.secure_stun)
        self.assertEqual(config.realm, "example.org")

    def test_unknownTomlKey(self) -> None:
        """An unknown key in the file names the key."""
        path = self.writeToml("stun-prot = 1\n")
        error = self.assertRaises(ConfigError, loadConfig, {}, path, {})
        self.assertEqual(error.key, "stun-prot")
        self.assertIn("unknown setting", str(error))

    def test_tomlTypes(self) -> None:
        """Wrong TOML types are refused with the key named."""
        for text, key in (('secure-stun = "yes"\n', "secure-stun"),
                          ("stun-port = true\n", "stun-port"),
                          ("stun-port = 70000\n", "stun-port"),
                          ("listen = [1]\n", "listen"),
                          ("realm = {a = 1}\n", "realm")):
            error = self.assertRaises(ConfigError, loadConfig, {}, self.writeToml(text), {})
            self.assertEqual(error.key, key)

    def test_badToml(self) -> None:
        """A file that is not TOML, or is missing, is a config error."""
        error = self.assertRaises(ConfigError, loadConfig, {}, self.writeToml("x = \n"), {})
        self.assertEqual(error.key, "config")
        error = self.assertRaises(ConfigError, loadConfig, {}, "/nonexistent.toml", {})
        self.assertIn("cannot read", str(error))

    def test_badFlagValues(self) -> None:
        """Bad values name the key; secrets are not echoed."""
        for flags, key in (({"stun-port": "x"}, "stun-port"),
                           ({"listen": ["nowhere"]}, "listen"),
                           ({"services": "stun,bogus"}, "services"),
                           ({"services": ""}, "services"),
                           ({"nonce-lifetime": "0"}, "nonce-lifetime"),
                           ({"max-connections": "0"}, "max-connections"),
                           ({"alternate-server": ["1.2.3.4"]}, "alternate-server"),
                           ({"no-such": "1"}, "no-such")):
            error = self.assertRaises(ConfigError, loadConfig, flags, None, {})
            self.assertEqual(error.key, key)
        error = self.assertRaises(ConfigError, loadConfig, {"user": ["nocolon-secret"]}, None, {})
        self.assertNotIn("nocolon-secret", str(error))

    def test_everySettingHasAFlagAndHelp(self) -> None:
        """Every field is a setting with help text; keys are the dashed attribute names."""
        for s in settings():
            self.assertEqual(s.key, s.attr.replace("_", "-"))
            self.assertTrue(s.help)


class SecretFileTests(SynchronousTestCase):
    """C{KEY-file} for every secret setting: secrets kept off the command line."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_everySecretHasAFileForm(self) -> None:
        secrets = {s.key for s in settings() if s.secret}
        self.assertTrue({"auth-secret", "gateway-token", "gateway-password", "user"} <= secrets)
        self.assertEqual(set(fileSettings()), {k + "-file" for k in secrets})

    def test_flag(self) -> None:
        config = loadConfig({"auth-secret-file": self.write("s3cret\n"),
                             "gateway-password-file": self.write("pass word\r\n")}, environ={})
        self.assertEqual(config.auth_secret, "s3cret")
        self.assertEqual(config.gateway_password, "pass word")

    def test_repeatableOnePerLine(self) -> None:
        config = loadConfig({"user-file": self.write("a:1\n\nb:2:3\n")}, environ={})
        self.assertEqual(config.user, (("a", "1"), ("b", "2:3")))

    def test_toml(self) -> None:
        secret = self.write("from-file")
        config = loadConfig({}, self.write(f'auth-secret-file = "{secret}"\n'), environ={})
        self.assertEqual(config.auth_secret, "from-file")

    def test_flagFileWinsOverToml(self) -> None:
        toml = self.write('auth-secret = "in-toml"\n')
        config = loadConfig({"auth-secret-file": self.write("in-file")}, toml, environ={})
        self.assertEqual(config.auth_secret, "in-file")

    def test_fileWinsOverEnvironment(self) -> None:
        config = loadConfig({"gateway-token-file": self.write("file")},
                            environ={"P2PNET_GATEWAY_TOKEN": "env"})
        self.assertEqual(config.gateway_token, "file")

    def test_notBoth(self) -> None:
        e = self.assertRaises(ConfigError, loadConfig,
                              {"auth-secret": "x", "auth-secret-file": self.write("y")}, None, {})
        self.assertEqual(e.key, "auth-secret-file")

    def test_unreadable(self) -> None:
        e = self.assertRaises(ConfigError, loadConfig, {"auth-secret-file": "/nonexistent/s"},
                              None, {})
        self.assertEqual(e.key, "auth-secret-file")
        self.assertIn("/nonexistent/s", str(e))

    def test_badValueHidden(self) -> None:
        """A bad secret from a file is named by its key, its value never shown."""
        e = self.assertRaises(ConfigError, loadConfig,
                              {"user-file": self.write("no-colon-secret\n")}, None, {})
        self.assertEqual(e.key, "user")
        self.assertNotIn("no-colon-secret", str(e))


class TomlArrayTests(SynchronousTestCase):
    """Every list setting takes a TOML array (issue 14 item 10)."""

    def load(self, text: str) -> Config:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return loadConfig({}, path, {})

    def test_arrays(self) -> None:
        config = self.load('services = ["stun", "turn"]\nrelay-ports = [50000, 50100]\n'
                           'relay-servers = ["relay.example:21117", "192.0.2.1"]\n')
        self.assertEqual(config.services, ("stun", "turn"))
        self.assertEqual(config.relay_ports, (50000, 50100))
        self.assertEqual(config.relay_servers, ("relay.example:21117", "192.0.2.1"))

    def test_stringsStillWork(self) -> None:
        config = self.load('services = "stun,turn"\nrelay-ports = "50000-50100"\n')
        self.assertEqual(config.services, ("stun", "turn"))
        self.assertEqual(config.relay_ports, (50000, 50100))

    def test_badItems(self) -> None:
        for text, key in (('services = ["stun", 3.5]\n', "services"),
                          ('services = ["bogus"]\n', "services"),
                          ("relay-ports = [1, 2, 3]\n", "relay-ports"),
                          ("relay-ports = [true, 2]\n", "relay-ports")):
            e = self.assertRaises(ConfigError, self.load, text)
            self.assertEqual(e.key, key, text)

    def test_everyListSettingTakesAnArray(self) -> None:
        """A setting whose value is a tuple is repeatable or names its separator."""
        for s in settings():
            if isinstance(s.default, tuple) and s.default != ():
                self.assertTrue(s.repeatable or s.sep, s.key)
            if "comma" in s.help.lower():
                self.assertTrue(s.repeatable or s.sep, s.key)


class CheckTests(SynchronousTestCase):
    """Validation of combinations."""

    def test_altListenNeedsSpecificPrimary(self) -> None:
        """RFC 5780 pairs the alternate with one specific address of its family."""
        for listen in ((), ("0.0.0.0",), ("127.0.0.1", "127.0.0.3"), ("::1",)):
            error = self.assertRaises(ConfigError, Config(listen=listen,
                                                          alt_listen=("127.0.0.2",)).check)
            self.assertEqual(error.key, "alt-listen")
        Config(listen=("127.0.0.1", "::1"), alt_listen=("127.0.0.2",)).check()

    def test_altListenSameAsPrimary(self) -> None:
        error = self.assertRaises(ConfigError, Config(listen=("127.0.0.1",),
                                                      alt_listen=("127.0.0.1",)).check)
        self.assertEqual(error.key, "alt-listen")

    def test_onePerFamily(self) -> None:
        error = self.assertRaises(ConfigError, Config(
            listen=("127.0.0.1",), alt_listen=("127.0.0.2", "127.0.0.3")).check)
        self.assertEqual(error.key, "alt-listen")

    def test_portClash(self) -> None:
        """Two listeners on one port number are refused; 0 (ephemeral) never clashes."""
        error = self.assertRaises(ConfigError, Config(stun_port=5000, tls_port=5000).check)
        self.assertEqual(error.key, "tls-port")
        Config(stun_port=0, tls_port=0).check()

    def test_certAndKeyTogether(self) -> None:
        error = self.assertRaises(ConfigError, Config(tls_cert="/c.pem").check)
        self.assertEqual(error.key, "tls-key")

    def test_emptyRealm(self) -> None:
        self.assertEqual(self.assertRaises(ConfigError, Config(realm="").check).key, "realm")

    def test_hostPort(self) -> None:
        self.assertEqual(parseHostPort("192.0.2.1:80"), ("192.0.2.1", 80))
        self.assertEqual(parseHostPort("[::1]:80"), ("::1", 80))
        self.assertRaises(ValueError, parseHostPort, "::1")
