"""X-Dyna Studio web app (Gradio Blocks). Placeholder until the app issue lands:
it serves a page that says what the engine can do from the command line."""

import os

import gradio as gr

import xdyna_core


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="X-Dyna Studio") as demo:
        gr.Markdown(
            f"# X-Dyna Studio {xdyna_core.__version__}\n"
            "The studio UI is being built. Use the `xdyna` command line meanwhile: "
            "`xdyna animate --help`."
        )
    return demo


if __name__ == "__main__":
    build_demo().launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
    )
