"""`tunewire generate JOB "prompt"`: a reply from a job's fine-tuned model.

    tunewire generate JOB "prompt" [--system TEXT] [--raw] [--max-tokens N] [--temperature T] [--top-p P] [--seed N]
    tunewire generate --model MODEL "prompt" ...    the base model alone

The prompt is sent as a user message, rendered with the model's chat template
(what the job trained on); `--raw` sends it as plain text instead.
"""

from __future__ import annotations

import argparse
import sys

from tunewire.cli.common import EXIT_USAGE, CliError, add_connection_flags, run_client_command
from tunewire.cli.render import to_json
from tunewire.client import Client

PROG = "tunewire generate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "words",
        nargs="+",
        metavar="JOB PROMPT",
        help="job id and prompt (prompt only with --model)",
    )
    parser.add_argument(
        "--model", default="", help="generate with this base model instead of a job's"
    )
    parser.add_argument("--system", default="", help="a system message before the prompt")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="send the prompt as plain text, without the chat template",
    )
    parser.add_argument("--max-tokens", type=int, default=128, help="default %(default)s")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="default %(default)s")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument("--json", action="store_true", help="the whole response as protobuf JSON")
    add_connection_flags(parser)
    return parser


def run_generate(argv: list[str]) -> int:
    return run_client_command(PROG, build_parser(), argv, generate)


def generate(client: Client, args: argparse.Namespace) -> int:
    expected = 1 if args.model else 2
    if len(args.words) != expected:
        usage = '--model MODEL "prompt"' if args.model else 'JOB "prompt"'
        raise CliError(
            f"expected {usage}, got {len(args.words)} argument(s); quote the prompt", EXIT_USAGE
        )
    job_id, prompt = ("", args.words[0]) if args.model else args.words
    if args.raw and args.system:
        raise CliError("--system needs the chat template; drop --raw", EXIT_USAGE)
    messages = (
        []
        if args.raw
        else [
            *([{"role": "system", "content": args.system}] if args.system else []),
            {"role": "user", "content": prompt},
        ]
    )
    reply = client.generate(
        job_id,
        prompt if args.raw else "",
        messages=messages,
        model=args.model,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    if args.json:
        print(to_json(reply))
        return 0
    print(reply.text)
    print(
        f"({reply.prompt_tokens} prompt tokens, {reply.generated_tokens} generated, "
        f"{reply.tokens_per_second:,.0f} tokens/s; {reply.adapter_path or reply.model})",
        file=sys.stderr,
    )
    return 0
