// The end-to-end bench's SMTP sink (bench/e2e.ts starts it): a hand-written SMTP server on node:net
// in a process of its own, so it takes no time from the worker's thread. It parses nothing but the
// command verbs and the end of DATA, advertises PIPELINING, accepts every message with 250 and
// counts. Its own capacity is measured in the same run by a raw pipelining client (bench/e2e.ts),
// to show it accepts far more than the worker sends.
//
// Control on stdin/stdout, one JSON line per command: "stat" -> {accepted, connections, bytes},
// "sample" -> {sample: the last message received, base64}. It prints {port} once listening.
import net from "node:net";
import readline from "node:readline";

let accepted = 0;
let connections = 0;
let bytes = 0;
let sample = "";

const server = net.createServer((socket) => {
  connections++;
  socket.setNoDelay(true);
  socket.on("error", () => {});
  socket.write("220 sink.bench ESMTP\r\n");
  let buffer = "";
  let inData = false;
  let message = "";
  socket.on("data", (chunk) => {
    buffer += chunk.toString("latin1");
    let out = "";
    for (;;) {
      if (inData) {
        const end = buffer.indexOf("\r\n.\r\n");
        if (end < 0) {
          // keep what may be the start of the terminator in the buffer; the rest is the message so far
          const keep = Math.max(0, buffer.length - 4);
          message += buffer.slice(0, keep);
          buffer = buffer.slice(keep);
          break;
        }
        message += buffer.slice(0, end + 2);
        buffer = buffer.slice(end + 5);
        inData = false;
        accepted++;
        sample = message.slice(2); // without the CRLF put in front of it below
        bytes += sample.length;
        message = "";
        out += "250 2.0.0 Ok: queued\r\n";
        continue;
      }
      const eol = buffer.indexOf("\r\n");
      if (eol < 0) break;
      const verb = buffer.slice(0, Math.min(4, eol)).toUpperCase();
      buffer = buffer.slice(eol + 2);
      if (verb === "EHLO") out += "250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n";
      else if (verb === "HELO") out += "250 sink.bench\r\n";
      else if (verb === "MAIL" || verb === "RCPT" || verb === "RSET" || verb === "NOOP") out += "250 2.0.0 Ok\r\n";
      else if (verb === "DATA") {
        out += "354 End data with <CR><LF>.<CR><LF>\r\n";
        inData = true;
        // the DATA line's CRLF in front, so that an empty message (a lone ".") ends like any other
        buffer = "\r\n" + buffer;
        message = "";
      } else if (verb === "QUIT") {
        socket.end(out + "221 2.0.0 Bye\r\n");
        return;
      } else out += "502 5.5.2 Command not recognized\r\n";
    }
    if (out) socket.write(out);
  });
});

server.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ port: server.address().port }));
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "stat") console.log(JSON.stringify({ accepted, connections, bytes }));
  else if (line === "sample") console.log(JSON.stringify({ sample: Buffer.from(sample, "latin1").toString("base64") }));
}).on("close", () => server.close(() => process.exit(0)));
