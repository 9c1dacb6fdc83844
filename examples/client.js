// A complete hubbub chat client for Node.js, on the `ws` package.
//
//   cd examples && npm install          (installs ws 8 from package.json)
//   node client.js ws://127.0.0.1:8080/ws [nick] [room] [text]
//
// It says hello, takes a nick, joins a room and says one line; then it prints what
// happens in the room and answers the server's pings. Each line typed on stdin is said
// in the room; end of input (Ctrl-D) says bye and quits.
'use strict';
const readline = require('node:readline');
const WebSocket = require('ws');

const [url = 'ws://127.0.0.1:8080/ws', nick = `node-${process.pid}`, room = 'lobby',
  text = 'hello from Node'] = process.argv.slice(2);

// No Origin header: the server lets non-browser clients in from anywhere.
const ws = new WebSocket(url);
const send = (frame) => ws.send(JSON.stringify(frame));
let typing = null;

ws.on('open', () => send({ type: 'hello', client: 'example-node/1' }));

ws.on('message', (data) => {
  const m = JSON.parse(data);
  switch (m.type) {
    case 'ping': // answer, or the server closes with 4002 (pong_timeout)
      send({ type: 'pong' });
      break;
    case 'welcome':
      console.log(`connected (session ${m.session})`);
      send({ type: 'profile', nick });
      break;
    case 'profile_ok':
      console.log(`you are ${m.nick}`);
      send({ type: 'join', room });
      break;
    case 'joined':
      console.log(`joined #${m.room} with ${m.members.join(', ')}`);
      for (const old of m.history) console.log(`  [${m.room}] ${old.from}: ${old.text}`);
      send({ type: 'say', room, text, id: 'first' });
      if (!typing) typeLines();
      break;
    case 'message':
      console.log(`[${m.room}] ${m.from}: ${m.text}`);
      break;
    case 'presence':
      console.log(`* ${m.nick} ${m.event}s #${m.room}`);
      break;
    case 'dm':
      console.log(`(dm) ${m.from}: ${m.text}`);
      break;
    case 'error':
      console.log(`error ${m.code}: ${m.message}`);
      if (m.code === 'nick_taken' || m.code === 'bad_nick') send({ type: 'bye' });
      break;
    case 'bye':
      console.log(`server says bye: ${m.reason}`);
      break;
    // ack, left, pong: nothing to show
  }
});

ws.on('close', (code) => {
  console.log(`closed ${code}`);
  process.exit(code === 1000 || code === 1001 ? 0 : 1);
});
ws.on('error', (err) => console.error(`error: ${err.message}`)); // 'close' follows

// Say every typed line in the room; at end of input, say bye (the server then closes).
function typeLines() {
  let n = 0;
  typing = readline.createInterface({ input: process.stdin });
  typing.on('line', (line) => {
    if (line.trim()) send({ type: 'say', room, text: line, id: `line-${++n}` });
  });
  typing.on('close', () => { if (ws.readyState === WebSocket.OPEN) send({ type: 'bye' }); });
}
