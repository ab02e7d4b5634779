"""This machine: process groups, file locks, PID files, and the environment a child process gets."""
