// Greedy replies from llama.cpp (through node-llama-cpp's prebuilt binaries) for bench/llama_cpp_adapter.py.
//   node bench/llama_cpp_greedy.mjs REQUEST.json   (run with node-llama-cpp on NODE_PATH's install)
// REQUEST: {"model": base.gguf, "lora": adapter.gguf | null, "prompts": [chat-templated text], "max_tokens": 48}
// Prompts arrive already chat-templated (the model's own template, applied in Python the way
// mlx-lm's scorer applies it), so both sides decode from the same tokens; prints one JSON line.
import fs from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.LLAMA_NODE_DIR + "/");
const { getLlama } = await import(require.resolve("node-llama-cpp"));
const request = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const llama = await getLlama({ gpu: false, build: "never" });
const model = await llama.loadModel({ modelPath: request.model });
const options = { contextSize: 512, threads: 2 };
if (request.lora) options.lora = { adapters: [{ filePath: request.lora, scale: 1.0 }] };
const replies = [];
for (const prompt of request.prompts) {
  // A fresh context per prompt: nothing of one reply leaks into the next.
  const context = await model.createContext(options);
  const sequence = context.getSequence();
  const out = [];
  const tokens = model.tokenize(prompt, true); // true: <|im_start|> etc. are special tokens
  for await (const token of sequence.evaluate(tokens, { temperature: 0 })) {
    if (model.isEogToken(token)) break;
    out.push(token);
    if (out.length >= request.max_tokens) break;
  }
  replies.push(model.detokenize(out));
  await context.dispose();
}
console.log(JSON.stringify({ replies, llama_cpp: llama.llamaCppRelease }));
