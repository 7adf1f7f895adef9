// The Vercel AI SDK (`ai` + `@ai-sdk/openai`, `.chat(model)`) and openai-node's
// `.stream()` helper as clients of a real proxy: one conversation each (see
// tests/clients/scenario.py), printed as JSON for tests/clients/test_js_clients.py.
//
//   node clients.mjs ai|openai-node <proxy base URL> <task id> <API key>
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, jsonSchema, streamText, tool } from 'ai';
import OpenAI from 'openai';

const [flow, baseURL, taskId, apiKey] = process.argv.slice(2);
const MODEL = 'mock-voice';
const TIMEOUT_MS = 2000; // tests/clients/scenario.py CLIENT_TIMEOUT_S
const TOOL_RESULT = '{"sky": "sunny", "celsius": 24}';
const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string' } },
  required: ['city'],
};

async function vercel() {
  const provider = createOpenAI({ baseURL, apiKey, headers: { 'X-Task-Id': taskId } });
  const model = provider.chat(MODEL);
  const errors = [];
  const onError = ({ error }) => errors.push(String(error));
  const out = {};
  const messages = [{ role: 'user', content: 'Hello there' }];

  // 1. A stream with meta.info events in it (they once fired onError).
  let result = streamText({ model, messages, maxRetries: 0, onError });
  out.hello = '';
  for await (const delta of result.textStream) out.hello += delta;
  messages.push({ role: 'assistant', content: out.hello });

  // 2. The client's tool: no execute, so the call comes back to us.
  messages.push({ role: 'user', content: 'What is the weather in Paris?' });
  const tools = {
    get_weather: tool({ description: 'The weather in a city.', inputSchema: jsonSchema(WEATHER) }),
  };
  result = streamText({ model, messages, tools, maxRetries: 0, onError });
  for await (const _ of result.textStream);
  const calls = await result.toolCalls;
  out.calls = calls.map((c) => ({ id: c.toolCallId, name: c.toolName, input: c.input }));
  messages.push(...(await result.response).messages);
  messages.push({
    role: 'tool',
    content: calls.map((c) => ({
      type: 'tool-result',
      toolCallId: c.toolCallId,
      toolName: c.toolName,
      output: { type: 'text', value: TOOL_RESULT },
    })),
  });
  const answer = await generateText({ model, messages, tools, maxRetries: 0 });
  out.sunny = answer.text;
  messages.push({ role: 'assistant', content: answer.text });

  // 3. A slow upstream: give up after 2 s and send the same messages again (the AI SDK
  //    does not retry an aborted request itself, so the app does, as apps do).
  messages.push({ role: 'user', content: 'Thanks!' });
  out.attempts = 0;
  out.welcome = '';
  while (out.attempts < 2 && !out.welcome) {
    out.attempts += 1;
    const attemptErrors = [];
    result = streamText({
      model,
      messages,
      maxRetries: 0,
      abortSignal: AbortSignal.timeout(TIMEOUT_MS),
      onError: ({ error }) => attemptErrors.push(String(error)),
    });
    let text = '';
    try {
      for await (const delta of result.textStream) text += delta;
    } catch (error) {
      attemptErrors.push(String(error));
    }
    if (!attemptErrors.length) out.welcome = text;
  }
  out.errors = errors;
  return out;
}

async function openaiNode() {
  const client = new OpenAI({
    baseURL,
    apiKey,
    defaultHeaders: { 'X-Task-Id': taskId },
    timeout: TIMEOUT_MS,
    maxRetries: 1,
  });
  const out = {};
  const messages = [{ role: 'user', content: 'Hello there' }];

  // 1. The .stream() helper with meta.info events in the stream (it once threw on them).
  let stream = client.chat.completions.stream({ model: MODEL, messages, stream: true });
  out.metainfo = [];
  for await (const chunk of stream) {
    if (chunk.type === 'meta.info') out.metainfo.push(chunk.metainfo);
  }
  out.hello = (await stream.finalChatCompletion()).choices[0].message.content;
  messages.push({ role: 'assistant', content: out.hello });

  // 2. The client's tool.
  messages.push({ role: 'user', content: 'What is the weather in Paris?' });
  const tools = [
    {
      type: 'function',
      function: { name: 'get_weather', description: 'The weather in a city.', parameters: WEATHER },
    },
  ];
  stream = client.chat.completions.stream({ model: MODEL, messages, tools, stream: true });
  const called = (await stream.finalChatCompletion()).choices[0].message;
  out.calls = called.tool_calls.map((c) => ({
    id: c.id,
    name: c.function.name,
    input: JSON.parse(c.function.arguments),
  }));
  messages.push({ role: 'assistant', content: null, tool_calls: called.tool_calls });
  messages.push({ role: 'tool', tool_call_id: called.tool_calls[0].id, content: TOOL_RESULT });
  const answer = await client.chat.completions.create({ model: MODEL, messages, tools });
  out.sunny = answer.choices[0].message.content;
  messages.push({ role: 'assistant', content: out.sunny });

  // 3. A slow upstream: the SDK times out after 2 s and retries by itself (maxRetries 1).
  messages.push({ role: 'user', content: 'Thanks!' });
  stream = client.chat.completions.stream({ model: MODEL, messages, stream: true });
  out.welcome = (await stream.finalChatCompletion()).choices[0].message.content;
  return out;
}

const flows = { ai: vercel, 'openai-node': openaiNode };
process.stdout.write(JSON.stringify(await flows[flow]()) + '\n');
