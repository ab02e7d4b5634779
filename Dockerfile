# The cw image: cw, git and (unless INSTALL_CLAUDE_CODE=false) the Claude Code CLI.
# Every service of docker-compose.yml and deploy/kubernetes/ runs it: `cw worker`,
# `cw worker --merge`, `cw beat`, `cw fsui`, `cw init`, or Flower through `celery`.
#
#   docker build -t codewalk-district .
#   docker build -t codewalk-district --build-arg INSTALL_CLAUDE_CODE=false .
FROM python:3.11-slim

# The Claude Code CLI needs Node.js 18+; Debian's nodejs package is new enough.
ARG INSTALL_CLAUDE_CODE=true
ARG CLAUDE_CODE_VERSION=latest
# Extras of the cw package to install too, comma-separated (empty: none).
ARG CW_EXTRAS=
ARG CW_UID=1000

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# tini is PID 1: it forwards SIGTERM to cw's Celery worker only (the worker then interrupts
# its agents so they commit their work) and reaps the processes agents leave behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git openssh-client tini \
    && if [ "$INSTALL_CLAUDE_CODE" = "true" ]; then \
         apt-get install -y --no-install-recommends nodejs npm; \
       fi \
    && rm -rf /var/lib/apt/lists/*

RUN if [ "$INSTALL_CLAUDE_CODE" = "true" ]; then \
      npm install -g "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" \
      && npm cache clean --force \
      && claude --version; \
    fi

WORKDIR /src
COPY pyproject.toml README.md ./
COPY cw ./cw
COPY workers ./workers
COPY beat ./beat
RUN pip install "/src${CW_EXTRAS:+[$CW_EXTRAS]}" && rm -rf /src && cw --version

# Agents commit in their worktrees: a fallback identity (cw's own commits set theirs).
RUN git config --system user.name "cw agent" \
    && git config --system user.email "cw-agent@localhost" \
    && git config --system init.defaultBranch main

# A non-root user: Claude Code refuses bypassPermissions as root, and agents should not be
# root anyway. /srv/cw/repo is the clone (with .cw/ inside), /srv/cw/hub.git a hub on a
# volume; ~/.claude keeps the agents' sessions. Volumes mounted there start out owned by cw.
RUN useradd --create-home --uid "$CW_UID" --shell /bin/bash cw \
    && mkdir -p /srv/cw/repo /srv/cw/hub.git /home/cw/.claude \
    && chown -R cw:cw /srv/cw /home/cw

USER cw
ENV HOME=/home/cw \
    CW_REPO=/srv/cw/repo
WORKDIR /srv/cw/repo

ENTRYPOINT ["/usr/bin/tini", "--", "cw"]
CMD ["--help"]
