"""The ResNet50Training Kubernetes operator (kopf). Import name `resnet50_operator`.

The directory above is deliberately not a package: a top-level `operator`
package would shadow Python's standard-library `operator` module.
"""
