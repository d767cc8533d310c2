// A real upstream MCP server written with the official TypeScript SDK, served over
// Streamable HTTP (stateful: a session per initialize, as the SDK's own example does).
//
//   node tests/servers/ts_server.mjs --port PORT
//
// Tools: echo {text}, add {a, b}, progress {steps} (a progress notification per step on
// the call's stream), sample {prompt} (asks the client's model, a server-to-client
// request on the call's own stream). Prints "ready" once it listens. Node 22 and the SDK come from .tools/
// (scripts/node-tools.sh).
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const require = createRequire(`${ROOT}.tools/ts-sdk/`);
const load = (name) => import(pathToFileURL(require.resolve(name)).href);
const { McpServer } = await load('@modelcontextprotocol/sdk/server/mcp.js');
const { StreamableHTTPServerTransport } = await load(
  '@modelcontextprotocol/sdk/server/streamableHttp.js');
const { CreateMessageResultSchema } = await load('@modelcontextprotocol/sdk/types.js');
const { z } = await load('zod');

const { values: args } = parseArgs({ options: { port: { type: 'string' } } });

function build() {
  const server = new McpServer({ name: 'ts-sdk', version: '1.0.0' });
  server.registerTool('echo', { inputSchema: { text: z.string() } },
    async ({ text }) => ({ content: [{ type: 'text', text }] }));
  server.registerTool('add', { inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }));
  server.registerTool('progress', { inputSchema: { steps: z.number() } },
    async ({ steps }, extra) => {
      const token = extra._meta?.progressToken;
      for (let step = 1; step <= steps; step += 1) {
        if (token !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress',
            params: { progressToken: token, progress: step, total: steps } });
        }
      }
      return { content: [{ type: 'text', text: `completed ${steps} steps` }] };
    });
  // Sent as part of the call (on its stream), as the SDK offers request handlers.
  server.registerTool('sample', { inputSchema: { prompt: z.string() } },
    async ({ prompt }, extra) => {
      const answer = await extra.sendRequest({ method: 'sampling/createMessage', params: {
        messages: [{ role: 'user', content: { type: 'text', text: prompt } }],
        maxTokens: 100 } }, CreateMessageResultSchema);
      return { content: [{ type: 'text', text: answer.content.text }] };
    });
  return server;
}

const transports = new Map();

async function body(request) {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString();
  return text ? JSON.parse(text) : undefined;
}

createServer(async (request, response) => {
  try {
    const id = request.headers['mcp-session-id'];
    const parsed = request.method === 'POST' ? await body(request) : undefined;
    let transport = id ? transports.get(id) : undefined;
    if (!transport) {
      if (id || request.method !== 'POST' || parsed?.method !== 'initialize') {
        response.writeHead(id ? 404 : 400, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ jsonrpc: '2.0', id: null,
          error: { code: -32000, message: id ? 'Session not found' : 'No session' } }));
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sessionId) => transports.set(sessionId, transport),
      });
      transport.onclose = () => transports.delete(transport.sessionId);
      await build().connect(transport);
    }
    await transport.handleRequest(request, response, parsed);
  } catch (error) {
    if (!response.headersSent) response.writeHead(500);
    response.end(String(error));
  }
}).listen(Number(args.port), '127.0.0.1', () => process.stdout.write('ready\n'));
