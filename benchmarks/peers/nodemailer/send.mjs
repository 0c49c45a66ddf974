// nodemailer, the peer in mailgem's benchmark: send the messages benchmarks/peers.py wrote
// through a pooled SMTP transport and print one JSON line of figures.
//
//     node send.mjs MESSAGES.jsonl PORT
//
// MESSAGES.jsonl holds one {"to", "subject", "text"} a line (From is bench@example.com).
// Reading them, loading nodemailer and creating the transport happen before the timing; the
// timed span is handing every message to the pool at once and awaiting them all (the pool
// queues them). Printed: messages, seconds, messages_per_s and cpu_s (this process's user +
// system CPU seconds in the timed span, all its threads).

import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';

const [path, portText] = process.argv.slice(2);
const port = Number(portText);
if (!path || !Number.isInteger(port)) {
    console.error('usage: node send.mjs MESSAGES.jsonl PORT');
    process.exit(2);
}

const messages = readFileSync(path, 'utf8')
    .split('\n')
    .filter(line => line)
    .map(line => ({ from: 'bench@example.com', ...JSON.parse(line) }));

const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true, // no TLS, as mailgem's sink connection
    pool: true,
    maxConnections: 4,
    // nodemailer reconnects after 100 messages by default; mailgem's side reuses a connection
    // for up to 100,000, so both keep their connections for the whole run
    maxMessages: Infinity,
});

const cpuStart = process.cpuUsage();
const start = process.hrtime.bigint();
let infos;
try {
    infos = await Promise.all(messages.map(message => transport.sendMail(message)));
} catch (err) {
    // one line for benchmarks/peers.py to show, not a stack trace
    console.error(`sending failed: ${err.code ?? ''} ${err.message}`);
    transport.close();
    process.exit(1);
}
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpuStart);
transport.close();

const refused = infos.filter((info, i) => info.rejected.length || !info.accepted.includes(messages[i].to));
if (refused.length) {
    console.error(`${refused.length} of ${messages.length} messages not accepted, e.g. ${JSON.stringify(refused[0])}`);
    process.exit(1);
}
console.log(JSON.stringify({
    messages: messages.length,
    seconds,
    messages_per_s: messages.length / seconds,
    cpu_s: (cpu.user + cpu.system) / 1e6,
}));
