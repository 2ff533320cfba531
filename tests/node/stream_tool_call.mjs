// One streaming chat completion with a tool call through the official `openai` npm package.
// Reads OPENAI_BASE_URL, OPENAI_API_KEY and MODEL; prints a JSON summary on stdout.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });
const stream = await client.chat.completions.create({
  model: process.env.MODEL,
  messages: [{ role: "user", content: "What is the weather in Paris and Oslo?" }],
  tools: [
    {
      type: "function",
      function: {
        name: "get_weather",
        parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
      },
    },
  ],
  stream: true,
  stream_options: { include_usage: true },
});

const ids = new Set();
const calls = {};
let finishReason = null;
let usage = null;
let lastChoices = null;
for await (const chunk of stream) {
  ids.add(chunk.id);
  lastChoices = chunk.choices.length;
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) {
    if (choice.finish_reason) finishReason = choice.finish_reason;
    for (const delta of choice.delta.tool_calls ?? []) {
      if (!(delta.index in calls)) {
        calls[delta.index] = { id: delta.id, type: delta.type, name: delta.function?.name, arguments: "" };
      } else if (delta.id || delta.function?.name) {
        calls[delta.index].repeated = true;
      }
      calls[delta.index].arguments += delta.function?.arguments ?? "";
    }
  }
}

// The SDK's own accumulator must agree (it is what strict apps use).
const runner = client.chat.completions.stream({
  model: process.env.MODEL,
  messages: [{ role: "user", content: "What is the weather in Paris and Oslo?" }],
  tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }],
});
const final = await runner.finalChatCompletion();

console.log(
  JSON.stringify({
    ids: [...ids],
    calls,
    finishReason,
    usage,
    lastChoices,
    finalToolCalls: final.choices[0].message.tool_calls,
  }),
);
