// The captioner in the browser: the exported ONNX graphs on onnxruntime-web's wasm backend, fully client-side.
// Files: this page's folder (web/) holds onnxruntime-web's module and wasm; its parent holds what export-onnx wrote
// (onnx/*.onnx, config.json, tokenizer.json, special_tokens.json, preprocessor_config.json, captioner_onnx.json).
// Nothing is fetched from anywhere else. Mirrors the library: preprocessing = captioner/preprocess.py (timm's eval transform, as
// preprocessor_config.json records it; the canvas resamples, PIL's bicubic is not reproduced), decoding = greedy
// (captioner/generate.py: BOS, argmax, stop at EOS or block_size - 1 tokens), text = CaptionTokenizer.decode.
import * as ort from "./ort.wasm.min.mjs";

const here = new URL("./", import.meta.url);
ort.env.wasm.wasmPaths = here.href; // the wasm beside this module, never a CDN
const parent = (name) => new URL(`../${name}`, here).href;

export class NotAnImage extends Error {}

/** The export's files: config, special ids, tokenizer, and the two sessions (fp32, or int8 with `quantized`). */
export async function load(quantized = false) {
  const json = async (name) => {
    const answer = await fetch(parent(name));
    if (!answer.ok) throw new Error(`${name}: ${answer.status} ${answer.statusText}`);
    return answer.json();
  };
  const [config, special, tokenizer, preprocessor, record] = await Promise.all(
    ["config.json", "special_tokens.json", "tokenizer.json", "preprocessor_config.json", "captioner_onnx.json"].map(json),
  );
  const suffix = quantized ? "_quantized" : "";
  const options = { executionProviders: ["wasm"] };
  const [encoder, decoder] = await Promise.all(
    ["encoder_model", "decoder_model_merged"].map((name) =>
      ort.InferenceSession.create(parent(`onnx/${name}${suffix}.onnx`), options),
    ),
  );
  return { config, special, preprocessor, record, decode: byteLevelDecoder(tokenizer, special), encoder, decoder };
}

/** The output size and the source rectangle [x, y, w, h] of a w x h image that preprocessor_config.json (what
 * export-onnx writes from the package's preprocessing) keeps: all of it resized to `size` (crop_mode "squash"), or
 * the shorter side scaled to `size.shortest_edge`, then the centre `crop_size` (a centre crop). */
function geometry(w, h, pre) {
  if (!pre.do_center_crop) return { H: pre.size.height, W: pre.size.width, rect: [0, 0, w, h] };
  const { height: H, width: W } = pre.crop_size;
  const scale = pre.size.shortest_edge / Math.min(w, h);
  return { H, W, rect: [(w - W / scale) / 2, (h - H / scale) / 2, W / scale, H / scale] };
}

/** An image file -> pixel_values (1, 3, H, W): decoded with its EXIF orientation and no colour conversion,
 * composited on white (as load_rgb), resized by the canvas, then x / 255, - mean, / std in float32 (as torch). */
export async function pixels(file, pre) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", imageOrientation: "from-image" });
  } catch {
    throw new NotAnImage(`${file.name || "this file"} is not an image this browser can decode`);
  }
  const { H, W, rect } = geometry(bitmap.width, bitmap.height, pre);
  const canvas = new OffscreenCanvas(W, H);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  ctx.imageSmoothingQuality = "high"; // only matters when the image is not at the input size already
  ctx.drawImage(bitmap, ...rect, 0, 0, W, H);
  bitmap.close();
  const rgba = ctx.getImageData(0, 0, W, H).data; // (H, W, 4) uint8
  const f = Math.fround;
  const out = new Float32Array(3 * H * W); // (3, H, W)
  for (let c = 0; c < 3; c++) {
    const [mean, std] = [f(pre.image_mean[c]), f(pre.image_std[c])];
    for (let i = 0; i < H * W; i++) out[c * H * W + i] = f(f(f(rgba[4 * i + c] / 255) - mean) / std);
  }
  return new ort.Tensor("float32", out, [1, 3, H, W]);
}

/** Greedy token ids (without BOS / EOS) for one image: the encoder once, then the merged decoder one token a step
 * with its present keys/values fed back as the past. */
export async function greedy(model, pixelValues) {
  const { config, special, record, encoder, decoder } = model;
  const image = await encoder.run({ pixel_values: pixelValues });
  const feed = {};
  for (const name of encoder.outputNames.slice(1)) feed[name.replace("present.", "past_key_values.")] = image[name];
  const [, groups, , headSize] = record.past_shape; // (B, key/value heads, P, head size), as export-onnx records it
  for (const name of decoder.inputNames) {
    if (name.startsWith("past_key_values.") && !(name in feed)) {
      feed[name] = new ort.Tensor("float32", new Float32Array(0), [1, groups, 0, headSize]); // P = 0
    }
  }
  const tokens = [];
  let last = special.bos_token_id;
  for (let step = 0; step < config.block_size - 1; step++) {
    const out = await decoder.run({ ...feed, input_ids: new ort.Tensor("int64", BigInt64Array.of(BigInt(last)), [1, 1]) });
    for (const name of decoder.outputNames.slice(1)) feed[name.replace("present.", "past_key_values.")] = out[name];
    last = argmax(out.logits.data); // (1, 1, V): the first largest, as torch.argmax
    if (last === special.eos_token_id) break;
    tokens.push(last);
  }
  return tokens;
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** GPT-2's bytes_to_unicode, inverted: the character a byte-level token uses for each byte -> the byte. */
function unicodeToBytes() {
  const bytes = [];
  for (const [lo, hi] of [[33, 126], [161, 172], [174, 255]]) for (let b = lo; b <= hi; b++) bytes.push(b);
  const chars = [...bytes];
  for (let b = 0, n = 0; b < 256; b++) {
    if (!bytes.includes(b)) {
      bytes.push(b);
      chars.push(256 + n++);
    }
  }
  return new Map(chars.map((c, i) => [String.fromCharCode(c), bytes[i]]));
}

/** ids -> text as CaptionTokenizer.decode does for a byte-level BPE: special tokens dropped, bytes joined, broken
 * UTF-8 dropped. */
export function byteLevelDecoder(tokenizer, special) {
  if (tokenizer.decoder?.type !== "ByteLevel") {
    throw new Error(`the page decodes byte-level BPE tokenizers; this tokenizer.json's decoder is ${tokenizer.decoder?.type}`);
  }
  const tokens = new Map(Object.entries(tokenizer.model.vocab).map(([token, id]) => [id, token]));
  const skip = new Set([special.pad_token_id, special.bos_token_id]);
  for (const added of tokenizer.added_tokens || []) {
    tokens.set(added.id, added.content);
    if (added.special) skip.add(added.id);
  }
  const byteOf = unicodeToBytes();
  const utf8 = new TextEncoder();
  return (ids) => {
    const data = [];
    for (const id of ids) {
      if (id === special.eos_token_id) break;
      if (skip.has(id)) continue;
      const token = tokens.get(id) ?? "";
      if ([...token].every((ch) => byteOf.has(ch))) for (const ch of token) data.push(byteOf.get(ch));
      else data.push(...utf8.encode(token)); // an added, non-special token is plain text
    }
    return new TextDecoder("utf-8").decode(new Uint8Array(data)).replaceAll("\ufffd", "");
  };
}

/** The caption of one image file. */
export async function caption(model, file) {
  return model.decode(await greedy(model, await pixels(file, model.preprocessor)));
}
