"""ament_python package that also installs with plain pip (see README)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "superpoint_ros"


def share(pattern):
    return sorted(p for p in glob(pattern) if not p.endswith(".md") or "models" in p)


setup(
    name=PACKAGE,
    version="0.1.0",
    description="SuperPoint visual front-end for SLAM on ROS 2, with training and evaluation tools",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["calibration/*.jpg"]},  # int8 calibration photos (superpoint_ros/backends.py)
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", share("launch/*.py")),
        (f"share/{PACKAGE}/config", share("config/*.yaml") + share("config/*.xml")),
        (f"share/{PACKAGE}/config/train", share("config/train/*.yaml")),
        (f"share/{PACKAGE}/models", share("models/*.pt") + share("models/*.md")),
    ],
    # The model and config files are also package data so that pip users get them without ROS.
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "torch>=2.1",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        "ros": [
            "ros-kilted-rclpy[fastrtps]",
            "ros-kilted-sensor-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-diagnostic-msgs",
        ],
        "eval": ["rosbags>=0.10", "rosbags-image>=0.10", "matplotlib>=3.7", "scikit-image>=0.22"],
        "slam": ["gtsam>=4.2", "evo>=1.30"],  # superpoint-eval-slam's back-end and scoring
        "train": ["tensorboard>=2.14", "scikit-image>=0.22", "onnx>=1.15", "onnxruntime>=1.17"],
        "dev": ["pytest>=7", "hypothesis>=6", "colcon-core", "colcon-ros", "colcon-bash", "catkin_pkg", "psutil"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            # ROS 2 executables (ros2 run superpoint_ros <name>)
            "superpoint_node = superpoint_ros.ros.node:main",
            "superpoint_lifecycle_node = superpoint_ros.ros.lifecycle_node:main",  # managed (lifecycle) node
            "superpoint-bag-play = superpoint_ros.ros.bag_play:main",
            "superpoint-demo = superpoint_ros.ros.demo:main",
            # offline tools
            "superpoint-extract = superpoint_ros.cli:main",
            "superpoint-synth = superpoint_ros.training.synthetic_shapes:main",
            "superpoint-train-magicpoint = superpoint_ros.training.train_magicpoint:main",
            "superpoint-adapt = superpoint_ros.training.adapt:main",
            "superpoint-train = superpoint_ros.training.train_superpoint:main",
            "superpoint-export = superpoint_ros.training.export:main",
            "superpoint-eval = superpoint_ros.evaluation.hpatches:main",
            "superpoint-make-dataset = superpoint_ros.evaluation.make_dataset:main",
            "superpoint-eval-slam = superpoint_ros.evaluation.slam_eval:main",
            "superpoint-eval-bag = superpoint_ros.evaluation.bag_eval:main",
            "superpoint-eval-posed = superpoint_ros.evaluation.posed:main",
        ],
    },
)
