# -*- test-case-name: test.unit.test_gateway_console -*-
"""The status page's and the TURN tester's stylesheet and scripts, served by the
appliance itself (no build step, no CDN). The pages work without them for reading; the
scripts update the status page in place and run the tester."""

__all__ = ["CONSOLE_CSS", "CONSOLE_JS", "TURN_TEST_JS"]

CONSOLE_CSS = b"""
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.counters td { min-width: 7em; } .ok { color: #17702a; } .bad { color: #b0171f; }
form.inline { display: inline; margin: 0; } .muted { color: #777; }
nav a { margin-right: 1em; }
"""

CONSOLE_JS = b"""
'use strict';
// Refresh the counters and tables of the status page every two seconds.
(function () {
  const csrf = document.body.dataset.csrf;
  let last = null;
  function cell(row, text, cls) {
    const td = row.insertCell(); td.textContent = text; if (cls) td.className = cls; return td;
  }
  function killButton(td, kind, target) {
    const form = document.createElement('form');
    form.method = 'post'; form.action = 'kill'; form.className = 'inline';
    for (const [name, value] of [['kind', kind], ['target', target], ['csrf', csrf]]) {
      const input = document.createElement('input');
      input.type = 'hidden'; input.name = name; input.value = value; form.appendChild(input);
    }
    const button = document.createElement('button');
    button.type = 'submit'; button.textContent = 'kill'; form.appendChild(button);
    td.appendChild(form);
  }
  function fill(id, rows, columns, kill) {
    const body = document.getElementById(id);
    if (!body) return;
    body.textContent = '';
    for (const item of rows) {
      const row = body.insertRow();
      for (const [key, cls] of columns) cell(row, key(item), cls);
      if (kill) killButton(row.insertCell(), kill[0], kill[1](item));
    }
  }
  function rate(now, previous, key, seconds) {
    if (!previous || seconds <= 0) return '-';
    const bits = Math.max(0, now[key] - previous[key]) * 8 / seconds;
    return bits >= 1e6 ? (bits / 1e6).toFixed(1) + ' Mbit/s' : (bits / 1e3).toFixed(1) + ' kbit/s';
  }
  async function refresh() {
    let state;
    try {
      const answer = await fetch('status.json', {credentials: 'same-origin', cache: 'no-store'});
      if (answer.status === 403) { location.reload(); return; }
      state = await answer.json();
    } catch (e) { return; }
    const now = performance.now() / 1000;
    const c = state.counters;
    for (const [key, value] of Object.entries(c)) {
      const el = document.getElementById('c-' + key); if (el) el.textContent = value;
    }
    const seconds = last ? now - last.at : 0;
    document.getElementById('r-turnBytes').textContent = rate(c, last && last.c, 'turnBytes', seconds);
    document.getElementById('r-relayBytes').textContent = rate(c, last && last.c, 'relayBytes', seconds);
    last = {at: now, c: c};
    fill('t-turn', state.tables.turn, [[i => i.user], [i => i.client], [i => i.transport],
      [i => i.relayed.join(' ')], [i => Math.round(i.age) + ' s', 'num'],
      [i => i.bytesToPeers, 'num'], [i => i.bytesFromPeers, 'num'],
      [i => i.permissions.length, 'num'], [i => i.channels.length, 'num']],
      ['turn-client', i => i.client.replace(/^\\[?([^\\]]*?)\\]?:\\d+$/, '$1')]);
    fill('t-relay', state.tables.relay, [[i => i.uuid], [i => i.a], [i => i.b],
      [i => Math.round(i.age) + ' s', 'num'], [i => i.bytes, 'num']], ['relay', i => i.uuid]);
    fill('t-peers', state.tables.peers, [[i => i.id], [i => i.address.join(':')],
      [i => i.transport], [i => Math.round(i.lastSeen) + ' s', 'num']], null);
    document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }
  setInterval(refresh, 2000);
  refresh();
})();
"""

TURN_TEST_JS = b"""
'use strict';
// The TURN/STUN tester: gather candidates from each server alone, then a relay-only
// data channel between two peer connections in this page.
(function () {
  const out = document.getElementById('results');
  const verdict = document.getElementById('verdict');
  function line(cells, cls) {
    const row = out.insertRow(); if (cls) row.className = cls;
    for (const text of cells) row.insertCell().textContent = text;
    return row;
  }
  function parse(candidate) {
    const f = candidate.split(' ');
    return {protocol: f[2], address: f[4] + ':' + f[5], type: f[7]};
  }
  async function gather(server, seconds) {
    const started = performance.now();
    const pc = new RTCPeerConnection({iceServers: [server]});
    const found = [];
    pc.onicecandidate = e => {
      if (!e.candidate || !e.candidate.candidate) return;
      const c = parse(e.candidate.candidate);
      c.ms = Math.round(performance.now() - started);
      found.push(c);
    };
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise(done => {
      const timer = setTimeout(done, seconds * 1000);
      pc.onicegatheringstatechange = () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(timer); done(); }
      };
    });
    pc.close();
    return found;
  }
  async function relayChannel(server) {
    const config = {iceServers: [server], iceTransportPolicy: 'relay'};
    const a = new RTCPeerConnection(config), b = new RTCPeerConnection(config);
    a.onicecandidate = e => e.candidate && b.addIceCandidate(e.candidate);
    b.onicecandidate = e => e.candidate && a.addIceCandidate(e.candidate);
    const channel = a.createDataChannel('relay-test');
    const echoed = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no message within 15 s')), 15000);
      b.ondatachannel = e => { e.channel.onmessage = m => { clearTimeout(timer); resolve(m.data); }; };
    });
    channel.onopen = () => channel.send('hello through the relay');
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    try { return await echoed; } finally { a.close(); b.close(); }
  }
  async function run() {
    document.getElementById('run').disabled = true;
    out.textContent = ''; verdict.textContent = 'testing...';
    let config;
    try {
      const answer = await fetch('turn-test.json', {credentials: 'same-origin', cache: 'no-store'});
      config = await answer.json();
      if (!answer.ok) throw new Error(config.error || answer.statusText);
    } catch (e) { verdict.textContent = 'cannot get credentials: ' + e.message; return; }
    const summary = [];
    for (const server of config.servers) {
      const found = await gather(server, 8);
      const wanted = server.relay ? 'relay' : 'srflx';
      const ok = found.some(c => c.type === wanted);
      let why = '';
      if (!ok && server.urls.startsWith('turns:')) {
        why = ' (a browser refuses a TLS certificate it does not trust: give tls-cert a ' +
              'certificate for this name)';
      }
      summary.push(server.label + ': ' + (ok ? 'works' : 'no ' + wanted + ' candidate' + why));
      for (const c of found) line([server.label, c.type, c.protocol, c.address, c.ms + ' ms'], 'cand-' + c.type);
      if (!found.length) line([server.label, 'none', '', '', ''], 'bad');
    }
    const relay = config.servers.find(s => s.relay);
    let channel = 'no TURN server to test';
    if (relay) {
      try { channel = 'relay-only data channel: passed ("' + await relayChannel(relay) + '")'; }
      catch (e) { channel = 'relay-only data channel: FAILED (' + e.message + ')'; }
    }
    summary.push(channel);
    verdict.textContent = summary.join('; ');
    document.body.dataset.done = 'yes';
    document.getElementById('run').disabled = false;
  }
  document.getElementById('run').addEventListener('click', run);
})();
"""
