"""Write the quickstart's settings, urls, model and capability blocks into a startproject tree."""

import re
import sys
from pathlib import Path

doc, port = Path(sys.argv[1]).read_text(), sys.argv[2]
python_blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)


def block(first_line: str) -> str:
    (found,) = [b for b in python_blocks if b.lstrip().startswith(first_line)]
    return found.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


settings = Path("mysite/settings.py")
settings.write_text(settings.read_text() + "\n" + block("# settings.py"))
Path("mysite/urls.py").write_text(block("# urls.py"))
Path("support/models.py").write_text(block("from django.db import models"))
Path("support/capabilities.py").write_text(block("from agentauth.capabilities import capability"))
print("-- quickstart blocks written: settings, urls, model, capabilities")
