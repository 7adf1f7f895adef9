// The Vercel AI SDK's default OpenAI provider (the Responses API) against the proxy.
// Usage: PROXY_BASE_URL=http://127.0.0.1:PORT/v1 node run.mjs <scenario>
// Prints one JSON object: what the SDK returned, and any error it reported.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const openai = createOpenAI({ baseURL: process.env.PROXY_BASE_URL, apiKey: "unused" });
const model = openai("gpt-test"); // openai(model): the Responses API

const weather = tool({
  description: "Weather for a city",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}`,
});

const scenarios = {
  async text() {
    const result = await generateText({ model, system: "Be brief.", prompt: "Hello from JS" });
    return { text: result.text, finishReason: result.finishReason, responseId: result.response.id };
  },
  async stream() {
    const errors = [];
    const result = streamText({
      model,
      prompt: "Stream to me",
      onError: ({ error }) => errors.push(String(error)),
    });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    return { text, errors, finishReason: await result.finishReason };
  },
  async tools() {
    const result = await generateText({
      model,
      prompt: "Weather in Paris?",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(3),
    });
    return {
      text: result.text,
      steps: result.steps.length,
      calls: result.steps.flatMap((s) => s.toolCalls.map((c) => [c.toolName, c.input])),
    };
  },
  async stream_tools() {
    const errors = [];
    const result = streamText({
      model,
      prompt: "Weather in Rome?",
      tools: { get_weather: weather },
      stopWhen: stepCountIs(3),
      onError: ({ error }) => errors.push(String(error)),
    });
    let text = "";
    for await (const piece of result.textStream) text += piece;
    return { text, errors, steps: (await result.steps).length };
  },
  async multiturn() {
    const messages = [{ role: "user", content: "I am Ann." }];
    const first = await generateText({ model, messages });
    messages.push(...first.response.messages, { role: "user", content: "Who am I?" });
    const second = await generateText({ model, messages });
    return { first: first.text, second: second.text };
  },
};

try {
  const out = await scenarios[process.argv[2]]();
  process.stdout.write(JSON.stringify({ ok: true, ...out }));
} catch (error) {
  process.stdout.write(JSON.stringify({ ok: false, error: String(error), data: error?.responseBody }));
}
